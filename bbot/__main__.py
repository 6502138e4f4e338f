import sys

from bbot.cli import main

sys.exit(main())
