"""`python -m healer` is the `healer` command."""

import sys

from healer.cli import main

sys.exit(main())
