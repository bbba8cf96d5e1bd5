import sys

from textbatch.cli import main

sys.exit(main())
