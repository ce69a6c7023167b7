export default { render({ el }) { el.textContent = "curves: being built"; } };
