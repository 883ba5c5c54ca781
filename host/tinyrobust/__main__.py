from tinyrobust.cli import main

main()
