from videoseq.cli import entry

entry()
