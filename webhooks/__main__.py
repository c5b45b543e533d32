"""``python -m webhooks``: the webhook worker, configured from the environment."""

from webhooks.worker import main

raise SystemExit(main())
