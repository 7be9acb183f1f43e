import sys

from tinythinker.cli import main

sys.exit(main())
