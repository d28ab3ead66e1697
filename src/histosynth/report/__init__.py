"""Reports people look at: contact sheets now, the audit report later."""
