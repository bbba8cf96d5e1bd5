import sys

from textbatch.cli.main import main

sys.exit(main())
