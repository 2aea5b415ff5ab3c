from dataset_builder.cli import main

raise SystemExit(main())
