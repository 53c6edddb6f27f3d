"""Allow ``python -m addon_server``."""

from addon_server.cli import main

raise SystemExit(main())
