export default { render({ el }) { el.textContent = "circuit_explorer: being built"; } };
