from services.sender.main import create_app
from shared.serve import serve

serve("sender", create_app, lambda s: (s.worker_host, s.sender_port))
