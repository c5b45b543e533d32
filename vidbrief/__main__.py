from vidbrief.cli import main

main()
