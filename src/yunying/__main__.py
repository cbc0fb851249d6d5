from yunying.cli.main import main

main()
