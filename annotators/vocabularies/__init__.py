"""Label vocabularies that ship with the project, so the `moai` profile runs as shipped (see SOURCES.md)."""
