"""`python -m kinfer` is the `kinfer` command."""

from kinfer.cli import main

raise SystemExit(main())
