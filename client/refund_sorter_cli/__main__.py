import sys

from refund_sorter_cli.commands import main

sys.exit(main())
