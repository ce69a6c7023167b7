"""Layer 8, analysis: what is built on attribution and evaluation. Faithfulness curves
(`curves`), circuit quality (`quality`), attention and OV views of heads (`heads`), MAPS head
functions (`head_functions`), exact patching (`exact`), ACDC (`acdc`) and path patching
(`path_patching`)."""
