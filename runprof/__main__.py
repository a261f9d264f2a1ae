"""``python -m runprof`` -> :func:`runprof.cli.main`."""
import sys

from .cli import main

sys.exit(main())
