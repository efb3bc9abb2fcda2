"""The config `relay init` writes (config.example.toml in the repository documents every key)."""

STARTER_CONFIG = """\
# relay configuration, written by `relay init`. Every key: config.example.toml.

[server]
host = "127.0.0.1"
port = 8080
token = "{token}"   # secret path segment of your callBackUrl; env RELAY_TOKEN overrides

[admin]
host = "127.0.0.1"
port = 8081

[storage]
state_dir = {state_dir}   # token, log and outbox; empty: $STATE_DIRECTORY under systemd, else ~/.local/state/relay

[tunnel]
provider = "ngrok"   # "ngrok" or "none"
# authtoken = ""     # or env NGROK_AUTHTOKEN
# domain = ""        # ngrok static domain: the callBackUrl survives restarts
# public_url = ""    # with provider = "none": your own reverse proxy's base URL

[notify]
urls = []            # Apprise URLs, e.g. "ntfy://ntfy.sh/my-topic", "failure=mailto://user:pass@example.com"
events = ["complete", "error"]
"""
