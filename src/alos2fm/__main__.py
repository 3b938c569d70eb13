from alos2fm.cli import main

main()
