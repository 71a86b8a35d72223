from services.tracker.main import create_app
from shared.serve import serve

serve("tracker", create_app, lambda s: (s.tracker_host, s.tracker_port))
