from phonemekit.cli import main

main()
