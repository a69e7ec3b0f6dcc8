from deploy.cli import main

if __name__ == "__main__":    # worker processes of the local engine import this module
    main()
