"""`python -m app.ui` runs the desktop app; also the entry script of the PyInstaller bundle (build.spec),
which is why the import is absolute."""
from app.ui.launch import main

if __name__ == "__main__":
    main()
