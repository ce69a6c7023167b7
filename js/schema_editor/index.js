export default { render({ el }) { el.textContent = "schema_editor: being built"; } };
