"""What every thermopipe program needs beside the event contract: loading a TOML config into its
typed model with errors in the user's words, secrets from the environment or a file, the shared
``[mqtt]`` connection model, the one builder of MQTT clients and their network loop, TLS
contexts, logging setup, command-line arguments, backoff and reconnect pacing, connect-error
wording, thread supervision, the installed version and the check that a role's optional
packages are there.

The contract itself (messages, topics, codecs, ids, the exception tree) is ``schemas``; this
package may import it, never the other way round, and neither imports ``edge_agent`` or ``hub``.
"""
