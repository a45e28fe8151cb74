"""``python -m edgeopt.cli``."""

from edgeopt.cli import main

raise SystemExit(main())
