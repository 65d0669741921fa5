/* The site's own script. "Open cookie settings" buttons outside the banner use the banner's public
   API; without JavaScript the same buttons open the dialog as a popover (popovertarget). */
document.addEventListener("click", function (e) {
  var button = e.target.closest && e.target.closest(".open-settings");
  if (button && window.consentBanner) {
    e.preventDefault();
    window.consentBanner.show();
  }
});
