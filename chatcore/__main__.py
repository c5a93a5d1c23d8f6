import sys

from chatcore.cli.main import main

sys.exit(main())
