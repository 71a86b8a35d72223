from services.webhooks.main import create_app
from shared.serve import serve

serve("webhooks", create_app, lambda s: (s.worker_host, s.webhooks_port))
