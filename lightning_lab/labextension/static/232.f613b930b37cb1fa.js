"use strict";(self.rspackChunklightning_lab_jupyterlab=self.rspackChunklightning_lab_jupyterlab||[]).push([[232],{475(e,r,t){var o=t(601),n=t.n(o),a=t(314),l=(t.n(a))()(n());l.push([e.id,`.ll-RunsPanel {
  display: flex;
  flex-direction: column;
  overflow: auto;
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
}

.ll-RunsPanel-header {
  display: flex;
  align-items: center;
  justify-content: space-between;
  padding: 6px 8px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color2);
  font-weight: 600;
  text-transform: uppercase;
}

.ll-RunsPanel-message {
  padding: 8px;
  overflow-wrap: anywhere;
  color: var(--jp-ui-font-color2);
}

.ll-RunsPanel table {
  width: 100%;
  border-collapse: collapse;
}

.ll-RunsPanel td {
  padding: 3px 6px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color3);
  vertical-align: top;
}

.ll-RunRow {
  cursor: pointer;
}

.ll-RunRow:hover {
  background: var(--jp-layout-color2);
}

.ll-RunRow.ll-selected {
  background: var(--jp-brand-color3);
}

.ll-RunRow-name {
  font-family: var(--jp-code-font-family);
  overflow-wrap: anywhere;
}

.ll-status {
  display: inline-block;
  padding: 0 4px;
  border-radius: 3px;
  font-size: var(--jp-ui-font-size0);
}

.ll-status-running { background: var(--jp-info-color3); }
.ll-status-completed { background: var(--jp-success-color3); }
.ll-status-failed { background: var(--jp-error-color3); }
.ll-status-stopped { background: var(--jp-warn-color3); }

.ll-RunRow-metrics {
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
}

.ll-RunDetail {
  padding: 8px;
  overflow-wrap: anywhere;
  border-top: var(--jp-border-width) solid var(--jp-border-color2);
}

.ll-RunDetail img {
  max-width: 100%;
  display: block;
  margin-top: 6px;
}

.ll-BatchDialog label {
  display: block;
  margin-top: 8px;
}

.ll-BatchDialog textarea,
.ll-BatchDialog input {
  width: 100%;
  box-sizing: border-box;
  font-family: var(--jp-code-font-family);
}
`,""]),t.d(r,{},{A:l})},314(e){e.exports=function(e){var r=[];return r.toString=function(){return this.map(function(r){var t="",o=void 0!==r[5];return r[4]&&(t+="@supports (".concat(r[4],") {")),r[2]&&(t+="@media ".concat(r[2]," {")),o&&(t+="@layer".concat(r[5].length>0?" ".concat(r[5]):""," {")),t+=e(r),o&&(t+="}"),r[2]&&(t+="}"),r[4]&&(t+="}"),t}).join("")},r.i=function(e,t,o,n,a){"string"==typeof e&&(e=[[null,e,void 0]]);var l={};if(o)for(var i=0;i<this.length;i++){var c=this[i][0];null!=c&&(l[c]=!0)}for(var s=0;s<e.length;s++){var p=[].concat(e[s]);o&&l[p[0]]||(void 0!==a&&(void 0===p[5]||(p[1]="@layer".concat(p[5].length>0?" ".concat(p[5]):""," {").concat(p[1],"}")),p[5]=a),t&&(p[2]&&(p[1]="@media ".concat(p[2]," {").concat(p[1],"}")),p[2]=t),n&&(p[4]?(p[1]="@supports (".concat(p[4],") {").concat(p[1],"}"),p[4]=n):p[4]="".concat(n)),r.push(p))}},r}},601(e){e.exports=function(e){return e[1]}},72(e){var r=[];function t(e){for(var t=-1,o=0;o<r.length;o++)if(r[o].identifier===e){t=o;break}return t}function o(e,o){for(var n={},a=[],l=0;l<e.length;l++){var i=e[l],c=o.base?i[0]+o.base:i[0],s=n[c]||0,p="".concat(c," ").concat(s);n[c]=s+1;var u=t(p),d={css:i[1],media:i[2],sourceMap:i[3],supports:i[4],layer:i[5]};if(-1!==u)r[u].references++,r[u].updater(d);else{var f=function(e,r){var t=r.domAPI(r);return t.update(e),function(r){r?(r.css!==e.css||r.media!==e.media||r.sourceMap!==e.sourceMap||r.supports!==e.supports||r.layer!==e.layer)&&t.update(e=r):t.remove()}}(d,o);o.byIndex=l,r.splice(l,0,{identifier:p,updater:f,references:1})}a.push(p)}return a}e.exports=function(e,n){var a=o(e=e||[],n=n||{});return function(e){e=e||[];for(var l=0;l<a.length;l++){var i=t(a[l]);r[i].references--}for(var c=o(e,n),s=0;s<a.length;s++){var p=t(a[s]);0===r[p].references&&(r[p].updater(),r.splice(p,1))}a=c}}},659(e){var r={};e.exports=function(e,t){var o=function(e){if(void 0===r[e]){var t=document.querySelector(e);if(window.HTMLIFrameElement&&t instanceof window.HTMLIFrameElement)try{t=t.contentDocument.head}catch(e){t=null}r[e]=t}return r[e]}(e);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(t)}},540(e){e.exports=function(e){var r=document.createElement("style");return e.setAttributes(r,e.attributes),e.insert(r,e.options),r}},56(e,r,t){e.exports=function(e){var r=t.nc;r&&e.setAttribute("nonce",r)}},825(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var r=e.insertStyleElement(e);return{update:function(t){var o,n,a;o="",t.supports&&(o+="@supports (".concat(t.supports,") {")),t.media&&(o+="@media ".concat(t.media," {")),(n=void 0!==t.layer)&&(o+="@layer".concat(t.layer.length>0?" ".concat(t.layer):""," {")),o+=t.css,n&&(o+="}"),t.media&&(o+="}"),t.supports&&(o+="}"),(a=t.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(a))))," */")),e.styleTagTransform(o,r,e.options)},remove:function(){var e;null===(e=r).parentNode||e.parentNode.removeChild(e)}}}},113(e){e.exports=function(e,r){if(r.styleSheet)r.styleSheet.cssText=e;else{for(;r.firstChild;)r.removeChild(r.firstChild);r.appendChild(document.createTextNode(e))}}},579(e,r,t){var o=t(72),n=t.n(o),a=t(825),l=t.n(a),i=t(659),c=t.n(i),s=t(56),p=t.n(s),u=t(540),d=t.n(u),f=t(113),v=t.n(f),h=t(475),m={};m.styleTagTransform=v(),m.setAttributes=p(),m.insert=c().bind(null,"head"),m.domAPI=l(),m.insertStyleElement=d(),n()(h.A,m),h.A&&h.A.locals&&h.A.locals}}]);