from mailintake.cli import app

app(prog_name="mailintake")
