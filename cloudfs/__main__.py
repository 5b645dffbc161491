import sys

from cloudfs.cli import main

sys.exit(main())
