from cogimg.cli import main

raise SystemExit(main())
