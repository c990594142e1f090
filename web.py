"""Run the Tasklane web process: ``python web.py [gunicorn options]`` (gunicorn serving app:create_app())."""

from app.web import main

if __name__ == "__main__":
    main()
