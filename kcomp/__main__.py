import sys

from kcomp.cli import main

sys.exit(main())
