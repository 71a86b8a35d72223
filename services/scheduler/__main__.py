from services.scheduler.main import create_app
from shared.serve import serve

serve("scheduler", create_app, lambda s: (s.worker_host, s.scheduler_port))
