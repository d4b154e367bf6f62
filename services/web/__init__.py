"""Browser pages for staff, compliance, model risk and operations (served by `policyhub serve`)."""
