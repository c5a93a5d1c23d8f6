"""Model clients: the responders that write the bot's reply."""
