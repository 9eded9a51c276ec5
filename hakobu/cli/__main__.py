import sys

from hakobu.cli.entry import main

sys.exit(main())
