"""The Redis half of the gateway side (gateways, the admin app, the CLI), one concern per module; no other
code on that side issues Redis commands. The worker's half is ``modelport.workers.broker``."""
