"""The blog under Flask: `flask --app examples.flask_app.app:create_app run`."""
