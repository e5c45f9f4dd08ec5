import sys

from migos.cli import main

sys.exit(main())
