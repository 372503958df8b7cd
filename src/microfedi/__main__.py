from microfedi.cli import main

main()
