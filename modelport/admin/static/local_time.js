// Shows every <time class="local-time"> of the page in the viewer's own time zone, to the second.
for (const element of document.querySelectorAll("time.local-time")) {
  const moment = new Date(element.getAttribute("datetime"));
  if (!Number.isNaN(moment.getTime())) {
    element.title = element.textContent;
    element.textContent = moment.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "medium"});
  }
}
