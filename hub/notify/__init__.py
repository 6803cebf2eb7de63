"""Notifications to caseworkers: match mails, delegates (rule 16), borging (rule 17)."""
