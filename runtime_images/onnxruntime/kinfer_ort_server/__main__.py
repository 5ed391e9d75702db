"""`python -m kinfer_ort_server`: the same as the `kinfer-ort-server` console script."""

import sys

from kinfer_ort_server.cli import main

sys.exit(main())
