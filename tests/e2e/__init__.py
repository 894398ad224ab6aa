"""End-to-end tests: the milter framework through real Postfix and sendmail."""
