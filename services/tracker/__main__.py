import sys

from shared.serve import serve

if sys.argv[1:] == ["inbox"]:  # the mailbox reader, a process of its own
    from services.tracker.inbox.main import create_app as create_inbox

    serve("tracker-inbox", create_inbox, lambda s: (s.worker_host, s.inbox_port))
else:
    from services.tracker.main import create_app

    serve("tracker", create_app, lambda s: (s.tracker_host, s.tracker_port))
