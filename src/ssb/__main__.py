import sys

from ssb.cli import main

if __name__ == "__main__":
    sys.exit(main())
