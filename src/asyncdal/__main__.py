"""``python -m asyncdal``: the ``asyncdal`` command."""

from asyncdal.ops._cli import main

raise SystemExit(main())
