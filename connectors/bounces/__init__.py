"""Where delivery status reports come from: DSN mails (a Maildir or an IMAP folder) and the
signed event webhooks of e-mail service providers. Every one of them becomes a
:class:`~connectors.bounces.base.BounceReport`."""
