from yunying.cli.main import app

app()
