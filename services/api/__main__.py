from services.api.main import create_app
from shared.serve import serve

serve("api", create_app, lambda s: (s.api_host, s.api_port))
