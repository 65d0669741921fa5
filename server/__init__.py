"""The demo site of consent-banner: `consent-banner demo` runs server.app.run()."""
